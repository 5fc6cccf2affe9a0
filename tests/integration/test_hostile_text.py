"""Text convtree cannot keep (U+0000, lone surrogates) is refused where it comes in, naming the
field, in every field of every writing endpoint; nothing is written."""

from __future__ import annotations

import json

import pytest

from tests.helpers import create, problem, say

# Raw JSON text: `\u0000` and a lone `\ud800` as a client's JSON encoder would send them.
NUL = "\\u0000"
LONE = "\\ud800"
LOW = "a\\udfffb"


def _post(api, path: str, body: str):
    return api.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


def _targets(cid: str, mid: str) -> list[tuple[str, str, str]]:
    """(path, body with a `{}` where the hostile text goes, the field the refusal names)."""
    conv = "/v1/conversations"
    msgs = f"{conv}/{cid}/messages"
    return [
        (conv, '{"title": "a{}"}', "title"),
        (conv, '{"system": "{}"}', "system"),
        (conv, '{"metadata": {"a": {"b": "x{}"}}}', "metadata.a.b"),
        (conv, '{"metadata": {"k{}": 1}}', "metadata.k{}"),
        (conv, '{"metadata": {"list": [1, ["{}"]]}}', "metadata.list[1][0]"),
        (msgs, '{"role": "user", "content": "{}"}', "content"),
        (msgs, '{"role": "user", "content": "ok", "metadata": {"a": "{}"}}', "metadata.a"),
        (f"{msgs}/{mid}/fork", '{"title": "{}"}', "title"),
        (f"{msgs}/{mid}/fork", '{"metadata": {"deep": {"er": ["{}"]}}}', "metadata.deep.er[0]"),
        (f"{msgs}/{mid}/redact", '{"reason": "{}"}', "reason"),
        (f"{conv}/{cid}/turns", '{"content": "{}", "provider": "echo"}', "content"),
        (f"{conv}/{cid}/turns", '{"content": "ok", "provider": "echo", "metadata": {"m": "{}"}}', "metadata.m"),
        (f"{conv}/{cid}/turns", '{"content": "ok", "provider": "echo{}"}', "provider"),
        (f"{conv}/{cid}/turns", '{"content": "ok", "provider": "echo", "model": "{}"}', "model"),
        (f"{conv}/{cid}/turns", '{"content": "ok", "provider": "echo", "params": {"stop": ["{}"]}}', "params.stop[0]"),
    ]


@pytest.mark.parametrize("hostile", [NUL, LONE, LOW])
def test_text_convtree_cannot_keep_is_a_422_naming_the_field_and_nothing_is_written(api, hostile):
    cid = create(api, title="kept")["id"]
    mid = say(api, cid, "hello")["id"]
    before = api.get(f"/v1/conversations/{cid}/events").json()["items"]
    for path, template, field in _targets(cid, mid):
        r = _post(api, path, template.replace("{}", hostile))
        body = problem(r, 422, "invalid-request")
        assert body["context"]["parameter"] == field.replace("{}", hostile), (path, template, body)
        assert body["context"]["parameter"].split(".")[0] in body["detail"]
    assert api.get(f"/v1/conversations/{cid}/events").json()["items"] == before
    assert [c["id"] for c in api.get("/v1/conversations").json()["items"]] == [cid]


def test_a_key_with_u0000_is_named_by_its_path(api):
    r = _post(api, "/v1/conversations", '{"metadata": {"outer": {"k\\u0000": 1}}}')
    body = problem(r, 422, "invalid-request")
    assert body["context"]["parameter"] == "metadata.outer.k\\u0000"
    assert "key" in body["detail"]


def test_the_openai_door_refuses_such_text_too(api):
    for body, field in [
        ('{"model": "echo", "messages": [{"role": "user", "content": "a\\u0000"}]}', "messages[0].content"),
        ('{"model": "echo", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}]}',
         "messages[0].content[0].text"),
        ('{"model": "echo\\u0000", "messages": [{"role": "user", "content": "hi"}]}', "model"),
        ('{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "user": "\\udc00"}', "user"),
    ]:
        r = _post(api, "/v1/chat/completions", body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == field
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert api.get("/v1/conversations").json()["items"] == []


def test_every_other_character_is_kept_exactly(api):
    text = "nul-free \x01\x1f\x7f\x80\x9f\u00a0\ufeff\uffff\ufffe\U0001f600\U0010ffff \"\\ end"
    c = create(api, title=text, metadata={text: [text, {"k": text}]}, system=text)
    assert c["title"] == text and c["metadata"] == {text: [text, {"k": text}]}
    m = say(api, c["id"], text, metadata={"t": text})
    assert m["content"] == text and m["metadata"] == {"t": text}
    got = api.get(f"/v1/conversations/{c['id']}/messages/{m['id']}").json()
    assert got["content"] == text and got["metadata"] == {"t": text}


def test_an_import_line_with_such_text_is_refused_naming_the_line(api):
    c = create(api, metadata={"m": "PLACEHOLDER"})
    say(api, c["id"], "hello", metadata={"n": 1})
    export = api.get(f"/v1/conversations/{c['id']}/export").text
    # Line 1's payload carries the metadata: its JSON text gets a `\u0000` (the chain is not
    # fixed up: text that cannot be kept is refused before the chain is looked at).
    lines = export.splitlines()
    tampered = lines[0].replace("PLACEHOLDER", "\\\\u0000")
    assert tampered != lines[0]
    r = api.post("/v1/conversations/import", content="\n".join([tampered, *lines[1:]]).encode() + b"\n")
    body = problem(r, 422, "invalid-export")
    assert body["context"]["line"] == 1 and body["context"]["reason"] == "unstorable-text"
    assert "payload.metadata.m" in body["detail"]
    # Content, actor or any other field of a line: the same.
    line2 = json.loads(lines[1])
    line2["content"] = "x\x00y"
    r = api.post("/v1/conversations/import", content="\n".join([lines[0], json.dumps(line2)]).encode())
    body = problem(r, 422, "invalid-export")
    assert body["context"]["line"] == 2 and body["context"]["reason"] == "unstorable-text"
    assert "content" in body["detail"]
    raw_surrogate = lines[1].replace('"hello"', '"\\ud800"')
    r = api.post("/v1/conversations/import", content="\n".join([lines[0], raw_surrogate]).encode())
    body = problem(r, 422, "invalid-export")
    assert body["context"]["line"] == 2 and body["context"]["reason"] == "unstorable-text"
