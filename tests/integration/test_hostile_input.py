"""Hostile input gets a clear 4xx answer, never a 500: deep JSON, out-of-range instants and
sequence numbers, missing bodies."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid

import asyncpg
import pytest

from service.app import messages
from service.app.caller import Caller
from service.store.events import Store
from tests.helpers import create, problem, say
from tests.postgres import fetch


DEEP = 2000  # far beyond the limit, and beyond what a recursive decoder survives


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_metadata(depth: int) -> bytes:
    """A conversation body whose metadata value nests `depth` arrays deep (the body is depth + 2)."""
    return b'{"metadata": {"k": ' + nested(depth).encode() + b"}}"


POSTS = [
    "/v1/conversations",
    "/v1/conversations/{cid}/messages",
    "/v1/conversations/{cid}/messages/{mid}/fork",
    "/v1/conversations/{cid}/messages/{mid}/redact",
    "/v1/conversations/{cid}/turns",
    "/v1/conversations/{cid}/messages/{mid}/regenerate",
]


@pytest.fixture
def conversation(api):
    cid = create(api)["id"]
    mid = say(api, cid, "hello")["id"]
    return cid, mid


@pytest.mark.parametrize("path", [*POSTS, "/v1/conversations/{cid}/head"])
def test_json_nested_too_deep_is_a_400_problem_on_every_body(api, conversation, path):
    cid, mid = conversation
    url = path.format(cid=cid, mid=mid)
    method = api.put if url.endswith("/head") else api.post
    body = ('{"content": "x", "metadata": {"k": ' + nested(DEEP) + "}}").encode()
    r = method(url, content=body, headers={"Content-Type": "application/json"})
    found = problem(r, 400, "json-too-deep")
    assert "64" in found["detail"]
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 1


def test_json_at_the_limit_is_accepted_and_read_back(api):
    # The body is 64 levels deep: the object, metadata, and 62 levels of arrays.
    r = api.post("/v1/conversations", content=deep_metadata(62), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["metadata"]["k"] == api.get(f"/v1/conversations/{cid}").json()["metadata"]["k"]
    over = api.post("/v1/conversations", content=deep_metadata(63), headers={"Content-Type": "application/json"})
    problem(over, 400, "json-too-deep")


def test_brackets_inside_strings_do_not_count_as_nesting(api):
    content = '"[[[[\\"{{{{' + "[" * 5000 + '"'
    r = api.post("/v1/conversations", content=b'{"title": ' + content.encode() + b"}",
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text  # a title too long, not too deep


def test_deep_json_on_the_openai_door_is_an_openai_error(api):
    body = '{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "user": ' + nested(DEEP) + "}"
    r = api.post("/v1/chat/completions", content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "json-too-deep"
    assert "64" in error["message"]
    assert {"message", "type", "param", "code"} <= set(error)


def test_deep_json_in_an_import_line_is_refused_with_the_line(api):
    cid = create(api, metadata={"k": [[["x"]]]})["id"]
    export = api.get(f"/v1/conversations/{cid}/export").content
    api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "x"})
    deep_line = b'{"v": 1, "seq": ' + nested(DEEP).encode() + b"}"
    for body in (deep_line, export + deep_line + b"\n"):
        r = api.post("/v1/conversations/import", content=body, headers={"Content-Type": "application/x-ndjson"})
        found = problem(r, 400, "json-too-deep")
        assert found["context"]["line"] == body.count(b"\n") + (0 if body.endswith(b"\n") else 1)


def test_a_deep_payload_inside_an_import_line_is_refused(api):
    cid = create(api)["id"]
    line = api.get(f"/v1/conversations/{cid}/export").content.splitlines()[0]
    event = json.loads(line)
    event["payload"] = '{"metadata": {"k": ' + nested(DEEP) + "}}"
    r = api.post("/v1/conversations/import", content=json.dumps(event).encode(),
                 headers={"Content-Type": "application/x-ndjson"})
    found = problem(r, 400, "json-too-deep")
    assert found["context"]["line"] == 1


@pytest.mark.parametrize(
    "as_of", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "-1", "9223372036854775808", "99999999999999999999"]
)
def test_as_of_outside_the_range_is_422_on_every_replay_read(api, as_of):
    cid = create(api)["id"]
    mid = say(api, cid, "hello")["id"]
    for path in ("", "/tree", "/leaves", "/context", f"/messages/{mid}/context"):
        r = api.get(f"/v1/conversations/{cid}{path}", params={"as_of": as_of})
        found = problem(r, 422, "invalid-request")
        assert "as_of" in found["detail"], found


@pytest.mark.parametrize("value", ["-1", "9223372036854775808", "x"])
def test_feed_positions_outside_the_range_are_422(api, value):
    cid = create(api)["id"]
    for url in (f"/v1/conversations/{cid}/events", "/v1/events"):
        problem(api.get(url, params={"after": value}), 422, "invalid-request")
        problem(api.get(url, params={"limit": value}), 422, "invalid-request")
    problem(api.get("/v1/events", headers={"Last-Event-ID": value}), 422, "invalid-request")


@pytest.mark.parametrize("seq", ["-1", "9223372036854775808", "99999999999999999999999", "x"])
def test_cursors_outside_the_range_are_422(api, seq):
    cursor = base64.urlsafe_b64encode(f"c1:{seq}".encode()).decode().rstrip("=")
    found = problem(api.get("/v1/conversations", params={"cursor": cursor}), 422, "invalid-request")
    assert "cursor" in found["detail"]


@pytest.mark.parametrize("path", [*POSTS, "/v1/conversations/{cid}/head", "/v1/chat/completions"])
def test_an_empty_body_is_a_problem_that_says_the_body_is_missing(api, conversation, path):
    cid, mid = conversation
    url = path.format(cid=cid, mid=mid)
    method = api.put if url.endswith("/head") else api.post
    answer = method(url, headers={"Content-Type": "application/json"})
    if url == "/v1/chat/completions":  # the OpenAI door answers OpenAI's error object
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert "body is missing" in error["message"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "body", "invalid-request")
        return
    found = problem(answer, 422, "invalid-request")
    assert "body is missing" in found["detail"], found
    assert found["errors"] == [{"message": found["detail"], "key": "body", "source": "body"}]


def test_an_empty_import_is_a_problem_that_says_the_body_is_missing(api):
    found = problem(api.post("/v1/conversations/import"), 422, "invalid-export")
    assert "body is missing" in found["detail"]


def test_a_deep_value_stored_before_the_limit_is_still_served(server, api):
    """A value deeper than the limit can only predate it (written here past the API, as the API
    once took it); every read of it still answers."""
    cid = create(api)["id"]
    query = "SELECT tenant FROM conversations WHERE conversation_id = $1"
    tenant = fetch(server.database_url, query, uuid.UUID(cid))[0]["tenant"]
    depth = 976  # about as deep as the API took before the limit (its decoder failed from ~985)
    legacy: list = []
    for _ in range(depth - 1):
        legacy = [legacy]

    async def write() -> str:
        pool = await asyncpg.create_pool(server.database_url, min_size=1, max_size=1)
        try:
            store = Store(pool)
            async with store.transaction() as tx:
                new = messages.NewMessage(role="user", content="old", metadata={"k": legacy})
                done = await messages.append(tx, Caller(tenant, "test"), uuid.UUID(cid), new)
                return str(done.message.id)
        finally:
            await pool.close()

    # Written from a fresh thread, whose stack starts empty: as deep as the API once took.
    written: list[str] = []
    writer = threading.Thread(target=lambda: written.append(asyncio.run(write())))
    writer.start()
    writer.join()
    mid = written[0]
    say(api, cid, "after")
    for path in (f"/messages/{mid}", f"/messages/{mid}/context", "/context", "/tree", "/events", "/export", "/audit"):
        r = api.get(f"/v1/conversations/{cid}{path}")
        assert r.status_code == 200, (path, r.text[:300])
    assert api.get(f"/v1/conversations/{cid}/context", params={"as_of": 10**12}).status_code == 200
    # Read back whole (as bytes: the test's own decoder would not survive this depth).
    assert nested(depth).encode() in api.get(f"/v1/conversations/{cid}/messages/{mid}").content

