"""Export and import: a conversation's log as JSON Lines, re-created elsewhere with the same ids and
hashes; a file that does not verify is refused at its first bad line, and nothing is written."""

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers import create, problem, say
from tests.servers import Server


NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture(scope="module")
def elsewhere(databases) -> Iterator[Server]:
    """A second convtree instance with a database of its own."""
    with Server(databases.migrated()) as srv:
        yield srv


def export(api, cid) -> bytes:
    r = api.get(f"/v1/conversations/{cid}/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return r.content


def import_(api, body: bytes, status=201):
    r = api.post("/v1/conversations/import", content=body, headers=NDJSON)
    assert r.status_code == status, r.text
    return r


def lines(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.splitlines()]


def unlines(items: list[dict]) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


def rich_conversation(api):
    """System prompt, a branch, a head move, a hidden and an erased message."""
    conv = create(api, title="export me", metadata={"team": "a"}, system="sys")
    cid = conv["id"]
    u1 = say(api, cid, "question", metadata={"k": 1})
    a1 = say(api, cid, "answer one", role="assistant")
    say(api, cid, "answer two", role="assistant", parent_message_id=u1["id"])
    hidden = say(api, cid, "hide me")
    erased = say(api, cid, "erase me")
    api.put(f"/v1/conversations/{cid}/head", json={"message_id": a1["id"]})
    say(api, cid, "café ☕ — ünïcode")
    api.post(f"/v1/conversations/{cid}/messages/{hidden['id']}/redact", json={"reason": "hide"})
    api.post(f"/v1/conversations/{cid}/messages/{erased['id']}/redact", json={"reason": "gdpr", "erase": True})
    return cid


def test_an_export_has_one_line_per_event_with_what_re_creates_it(api):
    cid = rich_conversation(api)
    body = export(api, cid)
    items = lines(body)
    events = api.get(f"/v1/conversations/{cid}/events").json()["items"]
    assert [i["seq"] for i in items] == [e["seq"] for e in events]
    assert [i["hash"] for i in items] == [e["hash"] for e in events]
    assert all(i["v"] == 1 and i["conversation_id"] == cid for i in items)
    messages = [i for i in items if i["type"] == "message_appended"]
    assert [m.get("content") for m in messages] == [
        "sys", "question", "answer one", "answer two", None, None, "café ☕ — ünïcode",
    ]
    assert json.loads(messages[1]["payload"]) == {"metadata": {"k": 1}}


def test_a_round_trip_to_another_instance_keeps_ids_hashes_and_tree(api, elsewhere):
    cid = rich_conversation(api)
    body = export(api, cid)
    _, key = elsewhere.new_key()
    with elsewhere.client(key) as there:
        r = import_(there, body)
        assert r.headers["location"] == f"/v1/conversations/{cid}"
        here_audit = api.get(f"/v1/conversations/{cid}/audit").json()
        there_audit = there.get(f"/v1/conversations/{cid}/audit").json()
        assert there_audit["valid"] is True
        assert there_audit["head_hash"] == here_audit["head_hash"] == lines(body)[-1]["hash"]
        assert there_audit["bodies_erased"] == 2  # the hidden body never left; the erased one is gone
        summary = {k: v for k, v in api.get(f"/v1/conversations/{cid}").json().items() if k != "last_seq"}
        assert {k: v for k, v in r.json().items() if k != "last_seq"} == summary

        def tree(client):
            t = client.get(f"/v1/conversations/{cid}/tree").json()
            return t["head_id"], [{k: v for k, v in m.items() if k != "seq"} for m in t["messages"]]

        assert tree(there) == tree(api)
        # Exported again, it is the same file but for where the events stood in each database.
        assert [{k: v for k, v in i.items() if k != "seq"} for i in lines(export(there, cid))] == [
            {k: v for k, v in i.items() if k != "seq"} for i in lines(body)
        ]
        # And the imported conversation goes on like any other.
        say(there, cid, "continued")
        assert there.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True


def test_the_same_id_may_be_imported_by_another_tenant_of_the_same_instance(server, api):
    cid = create(api, system="sys")["id"]
    say(api, cid, "hello")
    body = export(api, cid)
    _, key = server.new_key()
    with server.client(key) as other:
        import_(other, body)
        say(other, cid, "only theirs")
        assert len(other.get(f"/v1/conversations/{cid}/tree").json()["messages"]) == 3
    assert len(api.get(f"/v1/conversations/{cid}/tree").json()["messages"]) == 2
    assert [e["seq"] for e in api.get(f"/v1/conversations/{cid}/events").json()["items"]] == [
        i["seq"] for i in lines(body)
    ]


def test_importing_an_id_the_tenant_already_has_is_a_conflict(api):
    cid = create(api)["id"]
    body = export(api, cid)
    problem(import_(api, body, status=409), 409, "conversation-id-conflict")


def _tamper_payload(items):
    items[2]["payload"] = json.dumps({"metadata": {"forged": True}})
    return items, 3, "hash-mismatch"


def _drop_a_line(items):
    del items[2]
    return items, 3, "hash-mismatch"


def _swap_lines(items):
    items[1], items[2] = items[2], items[1]
    return items, 2, "hash-mismatch"


def _tamper_content(items):
    items[3]["content"] = "forged"
    return items, 4, "body-mismatch"


def _drop_content(items):
    del items[1]["content"]
    return items, 2, "body-missing"


def _tamper_hash(items):
    items[4]["hash"] = "00" * 32
    return items, 5, "hash-mismatch"


@pytest.mark.parametrize(
    "tamper", [_tamper_payload, _drop_a_line, _swap_lines, _tamper_content, _drop_content, _tamper_hash]
)
def test_a_tampered_export_is_refused_at_its_first_bad_line(server, api, tamper):
    cid = create(api, system="sys")["id"]
    for i in range(3):
        say(api, cid, f"m{i}")
    items, line, reason = tamper(lines(export(api, cid)))
    _, key = server.new_key()
    with server.client(key) as other:
        body = problem(import_(other, unlines(items), status=422), 422, "invalid-export")
        assert body["context"]["line"] == line and body["context"]["reason"] == reason, body
        assert body["context"]["seq"] == items[line - 1]["seq"]
        problem(other.get(f"/v1/conversations/{cid}"), 404, "conversation-not-found")


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (b"", None, "empty"),
        (b"\n\n", None, "empty"),
        (b"not json\n", 1, "malformed"),
        (b'{"v": 1}\n', 1, "malformed"),
        (b"\xff\xfe\n", 1, "malformed"),
    ],
)
def test_a_file_that_is_no_export_is_refused(api, body, line, reason):
    problem_body = problem(import_(api, body, status=422), 422, "invalid-export")
    assert problem_body["context"].get("line") == line and problem_body["context"]["reason"] == reason


def test_a_line_of_a_newer_format_or_a_broken_tree_is_refused(api):
    cid = create(api, system="sys")["id"]
    say(api, cid, "hi")
    items = lines(export(api, cid))
    future = [dict(items[0], v=2), *items[1:]]
    body = problem(import_(api, unlines(future), status=422), 422, "invalid-export")
    assert body["context"] == {"line": 1, "reason": "unsupported-version"}
    # A file that starts mid-conversation chains from nothing: its first line does not verify.
    body = problem(import_(api, unlines(items[1:]), status=422), 422, "invalid-export")
    assert body["context"]["line"] == 1


def test_a_fork_imports_only_after_its_source(api, elsewhere):
    cid = create(api, system="sys")["id"]
    u1 = say(api, cid, "q")
    say(api, cid, "a", role="assistant")
    r = api.post(f"/v1/conversations/{cid}/messages/{u1['id']}/fork", json={"title": "fork"})
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    say(api, fid, "another answer", role="assistant")
    fork_body, source_body = export(api, fid), export(api, cid)
    assert [i["type"] for i in lines(fork_body)] == ["conversation_forked", "message_appended"]
    _, key = elsewhere.new_key()
    with elsewhere.client(key) as there:
        body = problem(import_(there, fork_body, status=422), 422, "fork-source-missing")
        assert body["context"]["source_conversation_id"] == cid
        import_(there, source_body)
        imported = import_(there, fork_body).json()
        assert imported["forked_from"] == {"conversation_id": cid, "message_id": u1["id"]}
        ctx = there.get(f"/v1/conversations/{fid}/context").json()
        assert [m["content"] for m in ctx["messages"]] == ["sys", "q", "another answer"]
        audit = there.get(f"/v1/conversations/{fid}/audit").json()
        assert audit["valid"] and audit["head_hash"] == api.get(f"/v1/conversations/{fid}/audit").json()["head_hash"]


def test_an_import_retried_with_its_idempotency_key_answers_as_the_first_time(server, api):
    cid = create(api)["id"]
    body = export(api, cid)
    _, key = server.new_key()
    with server.client(key) as other:
        first = other.post("/v1/conversations/import", content=body, headers={**NDJSON, "Idempotency-Key": "imp-1"})
        again = other.post("/v1/conversations/import", content=body, headers={**NDJSON, "Idempotency-Key": "imp-1"})
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        other_body = export(api, create(api)["id"])
        reused = other.post("/v1/conversations/import", content=other_body, headers={**NDJSON, "Idempotency-Key": "imp-1"})
        problem(reused, 422, "idempotency-key-reused")


def test_another_tenants_conversation_cannot_be_exported(server, api):
    cid = create(api, system="private")["id"]
    _, key = server.new_key()
    with server.client(key) as other:
        problem(other.get(f"/v1/conversations/{cid}/export"), 404, "conversation-not-found")
    problem(api.get(f"/v1/conversations/{uuid.uuid4()}/export"), 404, "conversation-not-found")


def test_a_conversation_changed_through_the_conversations_api_moves_whole(api, elsewhere):
    """Its metadata updates, hidden messages and tombstone are events: exported, imported elsewhere
    with the same hashes, and read there as they were here."""
    made = api.post("/openai/v1/conversations", json={"items": [{"role": "user", "content": t} for t in "abc"]}).json()
    cid = str(uuid.UUID(hex=made["id"].removeprefix("conv_")))
    api.post(f"/openai/v1/conversations/{made['id']}", json={"metadata": {"k": "v"}})
    middle = api.get(f"/openai/v1/conversations/{made['id']}/items", params={"order": "asc"}).json()["data"][1]
    api.delete(f"/openai/v1/conversations/{made['id']}/items/{middle['id']}")
    body = export(api, cid)
    _, key = elsewhere.new_key()
    with elsewhere.client(key) as there:
        import_(there, body)
        assert export(there, cid) == body
        assert there.get(f"/v1/conversations/{cid}").json()["metadata"] == {"k": "v"}
        listed = there.get(f"/openai/v1/conversations/{made['id']}/items", params={"order": "asc"}).json()["data"]
        assert [i["content"][0]["text"] for i in listed] == ["a", "c"]
    api.delete(f"/openai/v1/conversations/{made['id']}")
    with elsewhere.client(elsewhere.new_key()[1]) as other:
        import_(other, export(api, cid))
        assert other.get(f"/openai/v1/conversations/{made['id']}").status_code == 404
        assert other.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True
