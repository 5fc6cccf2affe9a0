"""Audit: an untouched log verifies; an event or body altered or removed behind the service's back
(as a superuser, triggers off) is named."""

import uuid
from datetime import UTC, datetime

import asyncpg
import msgspec

from service.domain.audit import Reason
from service.domain.events import (
    GENESIS_HASH,
    ConversationCreated,
    Envelope,
    MessageAppended,
    body_digest,
    seal,
)
from service.domain.history import export_line
from tests.helpers import create, problem, say
from tests.postgres import run



def behind_the_back(url, statement, *args):
    """Run a statement as the superuser with every trigger off, as an attacker with the keys would."""

    async def go():
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                return await conn.execute(statement, *args)
        finally:
            await conn.close()

    return run(go())


def audit(api, cid):
    r = api.get(f"/v1/conversations/{cid}/audit")
    assert r.status_code == 200, r.text
    return r.json()


def chat(api, turns=3):
    conv = create(api, system="sys")
    for i in range(turns):
        say(api, conv["id"], f"question {i}")
        say(api, conv["id"], f"answer {i}", role="assistant")
    events = api.get(f"/v1/conversations/{conv['id']}/events").json()["items"]
    return conv["id"], events


def test_an_untouched_conversation_verifies(api):
    cid, events = chat(api)
    report = audit(api, cid)
    assert report == {
        "valid": True,
        "events_checked": len(events),
        "head_hash": events[-1]["hash"],
        "bodies_checked": 7,
        "bodies_erased": 0,
    }


def test_an_altered_event_is_named(server, api):
    cid, events = chat(api)
    target = events[4]
    assert target["type"] == "message_appended"
    behind_the_back(
        server.database_url, "UPDATE events SET payload = '{\"metadata\":{\"forged\":true}}' WHERE seq = $1", target["seq"]
    )
    report = audit(api, cid)
    assert report["valid"] is False
    assert (report["first_invalid_seq"], report["reason"]) == (target["seq"], Reason.HASH_MISMATCH)
    assert report["events_checked"] == 5 and report["head_hash"] == events[3]["hash"]


def test_an_altered_actor_of_a_non_message_event_is_named(server, api):
    cid, events = chat(api, turns=1)
    behind_the_back(server.database_url, "UPDATE events SET actor = 'mallory' WHERE seq = $1", events[0]["seq"])
    assert audit(api, cid)["first_invalid_seq"] == events[0]["seq"]


def test_a_deleted_event_is_named_by_the_gap_it_leaves(server, api):
    cid, events = chat(api)
    behind_the_back(server.database_url, "DELETE FROM events WHERE seq = $1", events[3]["seq"])
    report = audit(api, cid)
    assert (report["first_invalid_seq"], report["reason"]) == (events[4]["seq"], Reason.HASH_MISMATCH)


def test_a_deleted_last_event_shows_as_a_head_mismatch(server, api):
    cid, events = chat(api)
    behind_the_back(server.database_url, "DELETE FROM events WHERE seq = $1", events[-1]["seq"])
    report = audit(api, cid)
    assert report["valid"] is False and report["reason"] == Reason.HEAD_MISMATCH
    assert report["first_invalid_seq"] == events[-2]["seq"]


def test_an_altered_body_is_named(server, api):
    cid, events = chat(api)
    target = events[2]
    behind_the_back(
        server.database_url,
        "UPDATE bodies SET content = 'forged' WHERE message_id = $1",
        uuid.UUID(target["payload"]["message_id"]),
    )
    report = audit(api, cid)
    assert (report["first_invalid_seq"], report["reason"]) == (target["seq"], Reason.BODY_MISMATCH)


def test_a_body_removed_without_an_erasure_is_named(server, api):
    cid, events = chat(api)
    target = events[3]
    behind_the_back(
        server.database_url, "DELETE FROM bodies WHERE message_id = $1", uuid.UUID(target["payload"]["message_id"])
    )
    report = audit(api, cid)
    assert (report["first_invalid_seq"], report["reason"]) == (target["seq"], Reason.BODY_MISSING)


def _tamper_summary(url, cid, assignment, *args):
    """Change the conversation's summary row as a database administrator could: no event is written."""
    return behind_the_back(url, f"UPDATE conversations SET {assignment} WHERE conversation_id = $1", uuid.UUID(cid), *args)


def test_a_head_moved_without_an_event_is_named(server, api):
    cid, events = chat(api)
    other_branch = events[2]["payload"]["message_id"]  # the first question: not the head
    _tamper_summary(server.database_url, cid, "head_id = $2", uuid.UUID(other_branch))
    report = audit(api, cid)
    assert report["valid"] is False
    assert (report["reason"], report["fields"]) == (Reason.SUMMARY_MISMATCH, ["head_id"])
    assert report["first_invalid_seq"] == events[-1]["seq"] and "head_id" in report["detail"]


def test_a_title_metadata_or_count_changed_without_an_event_is_named(server, api):
    for assignment, field in [
        ("title = 'forged'", "title"),
        ("""metadata = '{"owner": "mallory"}'""", "metadata"),
        ("message_count = message_count + 1", "message_count"),
        ("leaf_count = 5", "leaf_count"),
        ("created_at = created_at - interval '1 day'", "created_at"),
    ]:
        cid, _ = chat(api, turns=1)
        _tamper_summary(server.database_url, cid, assignment)
        report = audit(api, cid)
        assert (report["valid"], report["reason"], report["fields"]) == (False, Reason.SUMMARY_MISMATCH, [field])


def test_summaries_written_by_every_kind_of_write_match_their_log(server, api):
    conv = create(api, system="sys", title="t", metadata={"b": [1, {"c": None}], "a": "x"})
    cid = conv["id"]
    question = say(api, cid, "q", metadata={"k": 1})
    say(api, cid, "a1", role="assistant")
    say(api, cid, "a2", role="assistant", parent_message_id=question["id"])
    assert api.put(f"/v1/conversations/{cid}/head", json={"message_id": question["id"]}).status_code == 200
    api.post(f"/v1/conversations/{cid}/turns", json={"content": "more", "provider": "echo"}).raise_for_status()
    redacted = say(api, cid, "secret")
    api.post(f"/v1/conversations/{cid}/messages/{redacted['id']}/redact", json={"reason": "r", "erase": True}).raise_for_status()
    fork = api.post(f"/v1/conversations/{cid}/messages/{question['id']}/fork", json={"metadata": {"f": 1}}).json()
    say(api, fork["id"], "in the fork")
    _, key = server.new_key()
    with server.client(key) as other:
        again = other.post("/v1/conversations/import", content=api.get(f"/v1/conversations/{cid}/export").content)
        assert again.status_code in (200, 201), again.text
        assert audit(other, cid)["valid"] is True
    for conversation in (cid, fork["id"]):
        report = audit(api, conversation)
        assert report["valid"] is True and "fields" not in report, report


def test_another_tenants_conversation_cannot_be_audited(server, api):
    cid, _ = chat(api, turns=1)
    _, key = server.new_key()
    with server.client(key) as other:
        problem(other.get(f"/v1/conversations/{cid}/audit"), 404, "conversation-not-found")


def _long_conversation(n: int):
    """A valid conversation of `n` messages, built with the domain's own sealing (given events)."""
    cid, family = uuid.uuid4(), uuid.uuid4()
    events, bodies, parent = [ConversationCreated(title="long")], {}, None
    for depth in range(n):
        mid = uuid.uuid4()
        bodies[mid] = f"message {depth}"
        events.append(
            MessageAppended(message_id=mid, parent_id=parent, role="user", content=bodies[mid], depth=depth, body_sha256=body_digest(bodies[mid]))
        )
        parent = mid
    envelopes = [
        Envelope(seq=i + 1, tenant="t", conversation_id=cid, family_id=family, actor="a", request_id=None,
                 created_at=datetime(2024, 1, 1, tzinfo=UTC))
        for i in range(len(events))
    ]
    return cid, seal(GENESIS_HASH, envelopes, events), bodies


def test_a_conversation_longer_than_a_batch_is_verified_and_exported_in_full(api):
    """Audit and export read a batch at a time; a long import proves the batches join up."""
    cid, sealed, bodies = _long_conversation(1200)
    lines = b"".join(
        msgspec.json.encode(export_line(s, bodies.get(s.columns.message_id))) + b"\n" for s in sealed
    )
    r = api.post("/v1/conversations/import", content=lines, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 201, r.text
    report = audit(api, str(cid))
    assert report["valid"] and report["events_checked"] == 1201 and report["bodies_checked"] == 1200
    assert report["head_hash"] == sealed[-1].hash.hex()
    exported = api.get(f"/v1/conversations/{cid}/export").content.splitlines()
    assert [msgspec.json.decode(line)["hash"] for line in exported] == [s.hash.hex() for s in sealed]
