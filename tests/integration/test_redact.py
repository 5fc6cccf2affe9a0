"""Redaction and erasure: content withdrawn from every read (forks included), recorded in the log,
and, when erased, gone from every table while the chain still verifies."""

import uuid

import asyncpg
import pytest

from tests.helpers import create, problem, say
from tests.postgres import fetch, run


PLACEHOLDER = "[redacted]"


def redact(api, cid, mid, status=201, **body):
    r = api.post(f"/v1/conversations/{cid}/messages/{mid}/redact", json={"reason": "personal data", **body})
    assert r.status_code == status, r.text
    return r.json()


def fork(api, cid, mid):
    r = api.post(f"/v1/conversations/{cid}/messages/{mid}/fork", json={})
    assert r.status_code == 201, r.text
    return r.json()


def test_a_redacted_message_reads_as_a_placeholder_everywhere(api):
    secret = f"my card is {uuid.uuid4().hex}"
    conv = create(api, system="sys")
    cid, root = conv["id"], conv["head_id"]
    u1 = say(api, cid, secret)
    a1 = say(api, cid, "noted", role="assistant")
    u2 = say(api, cid, "thanks")
    forked = fork(api, cid, a1["id"])  # inherits root → u1 → a1

    m = redact(api, cid, u1["id"])
    assert m["id"] == u1["id"] and m["content"] == PLACEHOLDER
    assert m["redacted"]["by"] == "test" and m["redacted"]["reason"] == "personal data"
    assert m["redacted"]["erased"] is False and m["redacted"]["at"]

    reads = {
        "message": api.get(f"/v1/conversations/{cid}/messages/{u1['id']}"),
        "children": api.get(f"/v1/conversations/{cid}/messages/{root}/children"),
        "head context": api.get(f"/v1/conversations/{cid}/context"),
        "message context": api.get(f"/v1/conversations/{cid}/messages/{u2['id']}/context"),
        "tree": api.get(f"/v1/conversations/{cid}/tree"),
        "export": api.get(f"/v1/conversations/{cid}/export"),
        # Replay shows the past, but not content withdrawn since: redaction reaches back.
        "replayed context": api.get(f"/v1/conversations/{cid}/context", params={"as_of": u2["seq"]}),
        "fork context": api.get(f"/v1/conversations/{forked['id']}/context"),
        "fork tree": api.get(f"/v1/conversations/{forked['id']}/tree"),
        "fork message": api.get(f"/v1/conversations/{forked['id']}/messages/{u1['id']}"),
    }
    for name, r in reads.items():
        assert r.status_code == 200, (name, r.text)
        assert secret not in r.text, name
    assert reads["message"].json()["content"] == PLACEHOLDER
    assert [c["content"] for c in reads["children"].json()["children"]] == [PLACEHOLDER]
    for name in ("head context", "message context", "replayed context", "fork context"):
        contents = [x["content"] for x in reads[name].json()["messages"]]
        assert contents[:3] == ["sys", PLACEHOLDER, "noted"], name
        redacted = [x for x in reads[name].json()["messages"] if "redacted" in x]
        assert [x["id"] for x in redacted] == [u1["id"]], name
    assert [x["content"] for x in reads["tree"].json()["messages"]] == ["sys", PLACEHOLDER, "noted", "thanks"]
    assert [x["content"] for x in reads["fork tree"].json()["messages"]] == ["sys", PLACEHOLDER, "noted"]
    # The log says who redacted what, when and why.
    last = api.get(f"/v1/conversations/{cid}/events").json()["items"][-1]
    assert last["type"] == "message_redacted" and last["actor"] == "test"
    assert last["payload"] == {"message_id": u1["id"], "reason": "personal data", "erase": False}
    assert last["created_at"] == api.get(f"/v1/conversations/{cid}/messages/{u1['id']}").json()["redacted"]["at"]
    assert api.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True


def test_redacting_again_records_nothing_unless_it_erases(api):
    cid = create(api)["id"]
    m = say(api, cid, "oops")
    first = redact(api, cid, m["id"])
    seq = api.get(f"/v1/conversations/{cid}").json()["last_seq"]
    assert redact(api, cid, m["id"], status=200, reason="again") == first
    assert api.get(f"/v1/conversations/{cid}").json()["last_seq"] == seq
    erased = redact(api, cid, m["id"], erase=True, reason="erasure request")
    assert erased["redacted"]["erased"] is True and erased["redacted"]["reason"] == "erasure request"
    assert redact(api, cid, m["id"], status=200, erase=True) == erased
    assert redact(api, cid, m["id"], status=200) == erased  # erasure cannot be taken back
    types = [e["type"] for e in api.get(f"/v1/conversations/{cid}/events").json()["items"]]
    assert types.count("message_redacted") == 2


def test_erasure_leaves_no_copy_in_any_table_and_the_audit_still_verifies(server, api):
    secret = f"erase-me-{uuid.uuid4().hex}"
    cid = create(api, system="sys")["id"]
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "user", "content": secret},
        headers={"Idempotency-Key": "append-secret"},
    )
    assert r.status_code == 201
    mid = r.json()["id"]
    say(api, cid, "after it", role="assistant")
    # Before: the body, and the response kept for the Idempotency-Key, which quotes it.
    assert set(_tables_quoting(server.database_url, secret)) == {"bodies", "idempotency_keys"}

    m = redact(api, cid, mid, erase=True)
    assert m["content"] == PLACEHOLDER and m["redacted"]["erased"] is True
    assert _tables_quoting(server.database_url, secret) == []
    report = api.get(f"/v1/conversations/{cid}/audit").json()
    assert report["valid"] is True and report["bodies_erased"] == 1 and report["bodies_checked"] == 2
    # A retry of the original append replays the response as it reads now.
    replay = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "user", "content": secret},
        headers={"Idempotency-Key": "append-secret"},
    )
    assert replay.status_code == 201 and replay.json()["content"] == PLACEHOLDER
    assert secret not in replay.text


def _tables_quoting(url, text):
    """Every table with a row whose text (or, for binary columns, whose bytes) contain `text`."""
    tables = [r["table_name"] for r in fetch(
        url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )]
    found = []
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        rows = fetch(
            url,
            f"SELECT count(*) AS n FROM {quoted} t WHERE t::text LIKE '%' || $1 || '%'"
            f" OR t::text LIKE '%' || encode(convert_to($1, 'UTF8'), 'hex') || '%'",
            text,
        )
        if rows[0]["n"]:
            found.append(table)
    return found


def test_a_body_can_be_deleted_only_after_its_erasure(server, api):
    cid = create(api)["id"]
    m = say(api, cid, "hidden, not erased")
    redact(api, cid, m["id"])

    async def delete():
        conn = await asyncpg.connect(server.database_url)
        try:
            await conn.execute("DELETE FROM bodies WHERE message_id = $1", uuid.UUID(m["id"]))
        finally:
            await conn.close()

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        run(delete())
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        fetch(server.database_url, "UPDATE bodies SET content = 'x' WHERE message_id = $1", uuid.UUID(m["id"]))


def test_redaction_is_refused_outside_the_callers_reach(server, api):
    conv = create(api, system="sys")
    cid = conv["id"]
    u1 = say(api, cid, "q")
    forked = fork(api, cid, u1["id"])
    _, key = server.new_key()
    with server.client(key) as other:
        problem(other.post(f"/v1/conversations/{cid}/messages/{u1['id']}/redact", json={"reason": "x"}),
                404, "conversation-not-found")
    problem(api.post(f"/v1/conversations/{cid}/messages/{uuid.uuid4()}/redact", json={"reason": "x"}),
            404, "message-not-found")
    # An inherited message is redacted through the conversation that wrote it.
    problem(api.post(f"/v1/conversations/{forked['id']}/messages/{u1['id']}/redact", json={"reason": "x"}),
            409, "message-inherited")
    problem(api.post(f"/v1/conversations/{cid}/messages/{u1['id']}/redact", json={}), 422, "invalid-request")
    problem(api.post(f"/v1/conversations/{cid}/messages/{u1['id']}/redact", json={"reason": ""}),
            422, "invalid-request")
    assert api.get(f"/v1/conversations/{cid}/messages/{u1['id']}").json()["content"] == "q"
