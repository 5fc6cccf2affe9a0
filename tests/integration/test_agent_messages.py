"""Every message an agent sends is stored exactly: parts, tool calls, reasoning, large binary parts
out of line, read back field for field through every read, export and import, and replay."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import asyncpg
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import create, problem
from tests.postgres import run
from tests.servers import Server

NDJSON = {"Content-Type": "application/x-ndjson"}
SAID = ("role", "content", "name", "tool_calls", "tool_call_id", "refusal", "reasoning_content", "reasoning", "metadata")
BIG = 16 * 1024  # a base64 payload this long or longer is stored out of line


def append(api: httpx.Client, cid: str, message: dict[str, Any]) -> dict[str, Any]:
    r = api.post(f"/v1/conversations/{cid}/messages", json=message)
    assert r.status_code == 201, r.text
    return r.json()


def said(message: dict[str, Any]) -> dict[str, Any]:
    """What a message says, as a reader serves it (metadata is always served, even empty)."""
    return {k: message[k] for k in SAID if k in message} | {"metadata": message.get("metadata", {})}


def image(seed: int, size: int = BIG + 100) -> str:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return "data:image/png;base64," + base64.b64encode(data).decode()[:size]


def stored_blobs(server: Server, digest: bytes) -> int:
    """How many copies of a part the database keeps out of line (looked at behind the service's back)."""

    async def count() -> int:
        conn = await asyncpg.connect(server.database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", digest))
        finally:
            await conn.close()

    return run(count())


def trace(call: str = "call_1") -> list[dict[str, Any]]:
    return [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": image(1), "detail": "high"}},
                                     {"type": "x-unknown", "anything": [1, {"b": None}]}], "name": "ann"},
        {"role": "assistant", "content": None, "reasoning_content": "think",
         "tool_calls": [{"id": call, "type": "function", "function": {"name": "look", "arguments": "{\"a\": 1}"}},
                        {"id": call + "b", "type": "custom", "custom": {"name": "grep", "input": "x"}}]},
        {"role": "tool", "tool_call_id": call, "content": "a cat"},
        {"role": "tool", "tool_call_id": call + "b", "content": [{"type": "text", "text": "nothing"}]},
        {"role": "assistant", "content": "A cat.", "refusal": None, "reasoning": {"encrypted_content": "opaque"}},
    ]  # fmt: skip


def export(api: httpx.Client, cid: str) -> bytes:
    r = api.get(f"/v1/conversations/{cid}/export")
    assert r.status_code == 200, r.text
    return r.content


def unnumbered(body: bytes) -> list[dict[str, Any]]:
    """An export's lines without `seq` (where each event stood in the exporting database)."""
    return [{k: v for k, v in json.loads(line).items() if k != "seq"} for line in body.splitlines()]


def elsewhere(server: Server) -> httpx.Client:
    _, key = server.new_key()
    return server.client(key)


def readings(api: httpx.Client, cid: str, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every read of the conversation's messages, each as what they say, in path order."""
    context = api.get(f"/v1/conversations/{cid}/context").json()["messages"]
    tree = {m["id"]: m for m in api.get(f"/v1/conversations/{cid}/tree").json()["messages"]}
    one = [api.get(f"/v1/conversations/{cid}/messages/{i}").json() for i in ids]
    return {
        "context": [said(m) for m in context],
        "tree": [said(tree[i]) for i in ids],
        "get": [said(m) for m in one],
    }


def test_an_agent_trace_reads_back_as_sent_through_every_read(api, server):
    cid = create(api)["id"]
    sent = trace()
    ids = [append(api, cid, m)["id"] for m in sent]
    expected = [said(m) for m in sent]
    for name, got in readings(api, cid, ids).items():
        assert got == expected, name
    # Replay: as of each event, the path ends with the message that event appended, as sent.
    events = api.get(f"/v1/conversations/{cid}/events").json()["items"]
    for index, event in enumerate(events[1:]):
        past = api.get(f"/v1/conversations/{cid}/context", params={"as_of": event["seq"]}).json()["messages"]
        assert [said(m) for m in past] == expected[: index + 1]
    # Export, then import into another tenant: the same events and hashes, the same messages.
    body = export(api, cid)
    with elsewhere(server) as there:
        r = there.post("/v1/conversations/import", content=body, headers=NDJSON)
        assert r.status_code == 201, r.text
        assert unnumbered(export(there, cid)) == unnumbered(body)
        assert readings(there, cid, ids) == readings(api, cid, ids)
        audit = there.get(f"/v1/conversations/{cid}/audit").json()
        assert audit["valid"] is True, audit


def test_a_json_body_is_recorded_in_its_event_and_a_string_body_keeps_its_payload(api):
    cid = create(api)["id"]
    append(api, cid, {"role": "user", "content": "plain"})
    append(api, cid, {"role": "user", "content": [{"type": "text", "text": "plain"}]})
    payloads = [e["payload"] for e in api.get(f"/v1/conversations/{cid}/events").json()["items"][1:]]
    assert "body" not in payloads[0] and payloads[1]["body"] == "json"
    audit = api.get(f"/v1/conversations/{cid}/audit").json()
    assert audit["valid"] is True, audit


def test_content_absent_and_content_null_read_back_as_sent(api):
    cid = create(api)["id"]
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    absent = append(api, cid, {"role": "assistant", "tool_calls": call})
    null = append(api, cid, {"role": "assistant", "content": None, "tool_calls": call})
    empty = append(api, cid, {"role": "assistant", "content": "", "tool_calls": call})
    got = {m["id"]: m for m in api.get(f"/v1/conversations/{cid}/tree").json()["messages"]}
    assert "content" not in got[absent["id"]] and "content" not in absent
    assert got[null["id"]]["content"] is None and null["content"] is None
    assert got[empty["id"]]["content"] == ""
    assert got[absent["id"]]["tool_calls"] == call


def test_a_retry_by_id_is_the_same_message_only_when_it_says_the_same(api):
    cid = create(api)["id"]
    mid = str(uuid.uuid4())
    message = {"id": mid, "role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r"}]}
    first = append(api, cid, message)
    again = api.post(f"/v1/conversations/{cid}/messages", json=message)
    assert again.status_code == 200 and again.json() == first
    other = api.post(f"/v1/conversations/{cid}/messages", json={**message, "tool_call_id": "c2"})
    problem(other, 409, "message-id-conflict")


def test_a_message_no_model_api_would_accept_is_refused_naming_the_field(api):
    cid = create(api)["id"]
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "tool_call_id": "x", "content": "hi"})
    assert problem(r, 422, "invalid-message")["context"]["field"] == "tool_call_id"
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": [{"type": "image_url"}]})
    assert problem(r, 422, "invalid-message")["context"]["field"] == "content[0].image_url.url"
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": "assistant", "content": None})
    assert problem(r, 422, "invalid-message")["context"]["field"] == "content"


def test_a_part_over_the_size_limit_is_413(api):
    cid = create(api)["id"]
    huge = "data:audio/wav;base64," + "A" * (8 * 1024 * 1024 + 1)
    part = {"type": "input_audio", "input_audio": {"data": huge, "format": "wav"}}
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": [part]})
    assert problem(r, 413, "message-too-large")["context"]["field"] == "content[0]"
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 0


def test_a_message_over_the_size_limit_is_413(api):
    cid = create(api)["id"]
    parts = [{"type": "file", "file": {"file_data": image(i, 4 * 1024 * 1024)}} for i in range(3)]
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": parts})
    assert problem(r, 413, "message-too-large")["context"]["field"] == "content"


def test_a_large_image_is_stored_once_and_erasure_deletes_it_once_no_body_refers_to_it(api, server):
    cid = create(api)["id"]
    url = image(7)
    part = {"type": "image_url", "image_url": {"url": url}}
    first = append(api, cid, {"role": "user", "content": [part]})
    second = append(api, cid, {"role": "user", "content": [{"type": "text", "text": "again"}, part]})
    digest = hashlib.sha256(url.encode()).digest()
    blobs = stored_blobs(server, digest)
    assert blobs == 1
    # Redaction withholds the image; the other message still shows it.
    r = api.post(f"/v1/conversations/{cid}/messages/{first['id']}/redact", json={"reason": "r", "erase": True})
    assert r.status_code == 201, r.text
    gone = api.get(f"/v1/conversations/{cid}/messages/{first['id']}").json()
    assert gone["content"] == "[redacted]" and url not in json.dumps(gone)
    kept = api.get(f"/v1/conversations/{cid}/messages/{second['id']}").json()
    assert kept["content"][1]["image_url"]["url"] == url
    assert stored_blobs(server, digest) == 1
    r = api.post(f"/v1/conversations/{cid}/messages/{second['id']}/redact", json={"reason": "r", "erase": True})
    assert r.status_code == 201, r.text
    assert stored_blobs(server, digest) == 0
    assert api.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True
    assert url not in export(api, cid).decode()


def test_an_export_with_a_tampered_image_is_refused(api, server):
    cid = create(api)["id"]
    append(api, cid, {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image(3)}}]})
    lines = [json.loads(line) for line in export(api, cid).splitlines()]
    [blobs] = [line["blobs"] for line in lines if "blobs" in line]
    (digest,) = blobs
    blobs[digest] = image(4)
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    with elsewhere(server) as there:
        r = there.post("/v1/conversations/import", content=body, headers=NDJSON)
        assert problem(r, 422, "invalid-export")["context"]["reason"] == "blob-digest-mismatch"


# --- a property: random agent traces --------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _text),
    st.builds(lambda s, d: {"type": "image_url", "image_url": {"url": image(s, BIG + s), "detail": d}},
              st.integers(0, 3), st.sampled_from(["auto", "low", "high"])),
    st.builds(lambda u: {"type": "image_url", "image_url": {"url": "https://example.com/" + u}}, _text),
    st.builds(lambda s: {"type": "input_audio", "input_audio": {"data": image(s, 100), "format": "mp3"}}, st.integers(0, 3)),
    st.builds(lambda s: {"type": "file", "file": {"file_data": image(s, BIG), "filename": "f.pdf"}}, st.integers(0, 3)),
    st.builds(lambda k, v: {"type": "x-" + k, "value": v}, st.text("abc", min_size=1, max_size=3), _json),
)  # fmt: skip
_content = st.one_of(_text.filter(bool), st.lists(_part, min_size=1, max_size=3))


@st.composite
def _traces(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in range(draw(st.integers(1, 3))):
        user: dict[str, Any] = {"role": draw(st.sampled_from(["user", "developer", "system"])), "content": draw(_content)}
        if draw(st.booleans()):
            user["name"] = draw(_text.filter(bool))
        messages.append(user)
        calls = [f"t{turn}c{i}" for i in range(draw(st.integers(0, 3)))]
        reply: dict[str, Any] = {"role": "assistant"}
        if calls:
            reply["tool_calls"] = [
                {"id": c, "type": "function", "function": {"name": draw(_text), "arguments": draw(_text)}} for c in calls
            ]
            choice = draw(st.sampled_from(["absent", "null", "text"]))
            if choice != "absent":
                reply["content"] = None if choice == "null" else draw(_text)
        else:
            reply["content"] = draw(_content)
        for field, values in (("refusal", st.none() | _text), ("reasoning_content", st.none() | _text),
                              ("reasoning", st.dictionaries(_text, _json, max_size=2)), ("metadata", st.dictionaries(_text, _json, max_size=2))):  # fmt: skip
            if draw(st.booleans()):
                reply[field] = draw(values)
        messages.append(reply)
        messages += [{"role": "tool", "tool_call_id": c, "content": draw(_content)} for c in calls]
    return messages


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=_traces())
def test_random_agent_traces_read_back_field_for_field(api, server, sent):
    cid = create(api)["id"]
    ids = [append(api, cid, m)["id"] for m in sent]
    expected = [said(m) for m in sent]
    for name, got in readings(api, cid, ids).items():
        assert got == expected, name
    last = api.get(f"/v1/conversations/{cid}/events").json()["items"][-1]["seq"]
    past = api.get(f"/v1/conversations/{cid}/context", params={"as_of": last}).json()["messages"]
    assert [said(m) for m in past] == expected
    body = export(api, cid)
    with elsewhere(server) as there:
        r = there.post("/v1/conversations/import", content=body, headers=NDJSON)
        assert r.status_code == 201, r.text
        assert unnumbered(export(there, cid)) == unnumbered(body)
        assert readings(there, cid, ids)["context"] == expected
