"""Erasure leaves nothing that confirms a guess: every message's digest is keyed with its own
random key, kept beside the body and deleted with it; digests written before keys existed still
verify, erased or not."""

import hashlib
import json
import uuid
from datetime import UTC, datetime

import msgspec

from service.domain.events import GENESIS_HASH, ConversationCreated, Envelope, MessageAppended, body_digest, seal
from service.domain.history import export_line
from tests.helpers import create, say
from tests.postgres import fetch



def _erase(api, cid, mid):
    r = api.post(f"/v1/conversations/{cid}/messages/{mid}/redact", json={"reason": "asked", "erase": True})
    assert r.status_code == 201, r.text


def _digests(api, cid):
    """Each message's recorded digest, as the feed shows it to anyone who may read the log."""
    items = api.get(f"/v1/conversations/{cid}/events").json()["items"]
    return {e["payload"]["message_id"]: e["payload"]["body_sha256"] for e in items if e["type"] == "message_appended"}


def _confirms_a_guess(digest_hex, candidates):
    return any(hashlib.sha256(c.encode()).hexdigest() == digest_hex for c in candidates)


PINS = [f"{n:04d}" for n in range(10_000)]


def test_an_erased_four_digit_body_cannot_be_found_by_trying_every_pin(server, api):
    conv = create(api)
    message = say(api, conv["id"], "4821")
    _erase(api, conv["id"], message["id"])
    digest = _digests(api, conv["id"])[message["id"]]
    assert not _confirms_a_guess(digest, PINS)
    assert fetch(server.database_url, "SELECT count(*) FROM bodies WHERE message_id = $1", uuid.UUID(message["id"]))[0][0] == 0
    report = api.get(f"/v1/conversations/{conv['id']}/audit").json()
    assert (report["valid"], report["bodies_erased"]) == (True, 1)


def test_every_door_that_writes_a_message_keys_its_digest(server, api):
    conv = create(api, system="1111")
    cid = conv["id"]
    say(api, cid, "2222")
    turn = api.post(f"/v1/conversations/{cid}/turns", json={"content": "3333", "provider": "echo"})
    assert turn.status_code == 201, turn.text
    completion = api.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "system", "content": "5555"}, {"role": "user", "content": "6666"}]},
    )
    assert completion.status_code == 200, completion.text
    written = {
        cid: ["1111", "2222", "3333", turn.json()["assistant_message"]["content"]],
        completion.json()["conversation_id"]: ["5555", "6666", completion.json()["choices"][0]["message"]["content"]],
    }
    for conversation, contents in written.items():
        digests = _digests(api, conversation)
        assert len(digests) == len(contents)
        for digest in digests.values():
            assert not _confirms_a_guess(digest, contents)
        for mid in digests:
            _erase(api, conversation, mid)
        report = api.get(f"/v1/conversations/{conversation}/audit").json()
        assert (report["valid"], report["bodies_erased"]) == (True, len(contents))
    assert fetch(server.database_url, "SELECT count(*) FROM bodies WHERE digest_key IS NULL AND family_id IN "
                 "(SELECT family_id FROM events WHERE conversation_id = ANY($1::uuid[]))", list(written))[0][0] == 0  # fmt: skip


def test_an_export_carries_the_key_with_the_content_and_imports_verified(server, api):
    conv = create(api, system="sys")
    say(api, conv["id"], "kept")
    secret = say(api, conv["id"], "withheld")
    api.post(f"/v1/conversations/{conv['id']}/messages/{secret['id']}/redact", json={"reason": "r"}).raise_for_status()
    lines = [json.loads(line) for line in api.get(f"/v1/conversations/{conv['id']}/export").text.splitlines()]
    messages = [line for line in lines if line["type"] == "message_appended"]
    assert [(m.get("content") is not None, m.get("body_key") is not None) for m in messages] == [
        (True, True), (True, True), (False, False)
    ]  # fmt: skip
    _, key = server.new_key()
    with server.client(key) as other:
        body = "\n".join(json.dumps(line) for line in lines)
        imported = other.post("/v1/conversations/import", content=body)
        assert imported.status_code == 201, imported.text
        assert other.get(f"/v1/conversations/{conv['id']}/audit").json()["valid"] is True
        # A key that does not go with the content is caught like altered content.
        forged = [dict(line) for line in lines]
        forged[1]["body_key"] = "00" * 32
        _, third = server.new_key()
        with server.client(third) as another:
            refused = another.post("/v1/conversations/import", content="\n".join(json.dumps(line) for line in forged))
            assert refused.status_code == 422 and refused.json()["context"]["reason"] == "body-mismatch"


def test_messages_with_unkeyed_digests_still_verify_erased_or_not(api):
    """A conversation written before digests were keyed (its export has no keys) imports, audits,
    and is erased like any other, its events' bytes and hashes as they always were."""
    cid, family = uuid.uuid4(), uuid.uuid4()
    bodies = {uuid.uuid4(): "hello", uuid.uuid4(): "1234"}
    events, parent = [ConversationCreated(title="old")], None
    for depth, (mid, text) in enumerate(bodies.items()):
        events.append(MessageAppended(message_id=mid, parent_id=parent, role="user", content=text, depth=depth, body_sha256=body_digest(text)))
        parent = mid
    now = datetime.now(UTC)
    envelopes = [Envelope(seq=i + 1, tenant="t", conversation_id=cid, family_id=family, actor="old", request_id=None,
                          created_at=now) for i in range(len(events))]  # fmt: skip
    sealed = seal(GENESIS_HASH, envelopes, events)
    export = b"\n".join(
        msgspec.json.encode(export_line(s, bodies.get(s.columns.message_id))) for s in sealed  # type: ignore[arg-type]
    )
    assert b"body_key" not in export.replace(b'"body_key":null', b"")
    r = api.post("/v1/conversations/import", content=export)
    assert r.status_code == 201, r.text
    assert api.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True
    pin = list(bodies)[1]
    _erase(api, str(cid), str(pin))
    report = api.get(f"/v1/conversations/{cid}/audit").json()
    assert (report["valid"], report["bodies_checked"], report["bodies_erased"]) == (True, 1, 1)
    hashes = [e["hash"] for e in api.get(f"/v1/conversations/{cid}/events").json()["items"]][: len(sealed)]
    assert hashes == [s.hash.hex() for s in sealed]
