"""Turns with an upstream that misbehaves in ways no error covers: a reply larger than convtree
stores, a rate limit passed on with its Retry-After, and a first byte slow in coming while a
stream must stay open."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.fakeupstream import Fault, FakeUpstream
from tests.helpers import create, problem
from tests.postgres import Databases
from tests.servers import Server, fake_registry
from tests.turnkit import assert_settled, sse, turn_failures


CAP = 1_000_000  # the reply cap, the same as a plain append's content limit
FIVE_MB = 5 * 1024 * 1024


@pytest.mark.parametrize("provider", ["fake", "fakeollama"])
def test_a_single_huge_chunk_is_cut_at_the_reply_cap_and_the_reply_ends_normally_marked_as_cut(
    model_api, model_server, upstream, provider
):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.reply("Hello", "x" * FIVE_MB, "never read"))
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi", "provider": provider})
    assert r.status_code == 201, r.text[:500]
    reply = r.json()["assistant_message"]
    assert len(reply["content"]) == CAP and reply["content"] == "Hello" + "x" * (CAP - 5)
    g = reply["generation"]
    assert g["finish_reason"] == "length" and g["truncated"] is True and g["interruption"] is None
    stored = model_api.get(f"/v1/conversations/{cid}/messages/{reply['id']}").json()
    assert len(stored["content"]) == CAP and stored["generation"]["truncated"] is True
    assert_settled(model_server.database_url, cid)


def test_a_streamed_reply_over_the_cap_relays_and_stores_exactly_the_cap_and_ends_with_done(
    model_api, model_server, upstream
):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.reply(*(["y" * 300_000] * 5)))
    body = {"content": "hi", "stream": True}
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r:
        events = list(sse(r))
    relayed = "".join(data["text"] for name, data in events if name == "delta")
    name, done = events[-1]
    assert name == "done" and done["generation"]["finish_reason"] == "length" and done["generation"]["truncated"]
    assert relayed == done["content"] == "y" * CAP
    assert_settled(model_server.database_url, cid)


def test_a_line_too_large_to_read_ends_the_reply_there_marked_as_cut(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.reply("Hello", "z" * (12 * 1024 * 1024)))
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"})
    assert r.status_code == 201, r.text[:500]
    reply = r.json()["assistant_message"]
    assert reply["content"] == "Hello"
    assert reply["generation"]["finish_reason"] == "length" and reply["generation"]["truncated"] is True
    assert_settled(model_server.database_url, cid)


def test_a_reply_cut_at_the_cap_ends_with_finish_reason_length_on_the_openai_door(model_api, upstream):
    upstream.fail_next(Fault.reply("w" * FIVE_MB))
    r = model_api.post("/v1/chat/completions", json={"model": "fake-large", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text[:500]
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length" and len(choice["message"]["content"]) == CAP


def test_text_a_plain_append_would_refuse_is_stored_with_a_replacement_character(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.reply("a\x00b"))
    reply = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"}).json()["assistant_message"]
    assert reply["content"] == "a\ufffdb" and reply["generation"]["finish_reason"] == "stop"
    assert_settled(model_server.database_url, cid)


def test_an_upstream_rate_limit_is_a_429_with_the_upstreams_retry_after(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.status_code(429, retry_after="30"))  # longer than is waited out: passed on
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"})
    body = problem(r, 429, "upstream-rate-limited")
    assert r.headers["retry-after"] == "30" and body["context"]["retry_after"] == 30
    assert_settled(model_server.database_url, cid)


def test_an_upstream_rate_limit_without_retry_after_still_gets_a_retry_after_header(model_api, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(*[Fault.status_code(429)] * 3)
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"})
    problem(r, 429, "upstream-rate-limited")
    assert int(r.headers["retry-after"]) >= 1


def test_an_upstream_rate_limit_on_the_openai_door_is_openais_error_object_with_retry_after(model_api, upstream):
    upstream.fail_next(Fault.status_code(429, retry_after="20", message="slow down"))
    chat = {"model": "fake-large", "messages": [{"role": "user", "content": "hi"}]}
    r = model_api.post("/v1/chat/completions", json=chat)
    assert r.status_code == 429 and r.headers["retry-after"] == "20"
    error = r.json()["error"]
    assert "slow down" in error["message"] and error["code"] == "upstream-rate-limited"
    assert error["type"] == "rate_limit_error"


@pytest.fixture(scope="module")
def keepalive_server(databases: Databases, upstream_server: FakeUpstream) -> Iterator[Server]:
    with Server(databases.migrated(), fake_registry(upstream_server), sse_keepalive_seconds=0.2) as srv:
        yield srv


def _lines_before_first_data_after(lines: Iterator[str], opening: str) -> list[str]:
    """The raw lines of a stream between its first `data:` line starting with `opening` and the next data line."""
    seen, between = False, []
    for line in lines:
        if line.startswith("data:"):
            if seen:
                return between
            seen = line.startswith(opening)
        elif seen and line:
            between.append(line)
    return between


def test_a_stream_waiting_for_the_first_byte_sends_keep_alive_comments(keepalive_server, upstream):
    _, key = keepalive_server.new_key()
    with keepalive_server.client(key) as api:
        cid = create(api)["id"]
        upstream.fail_next(Fault.slow_first_byte(1.2))
        with api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "hi", "stream": True}) as r:
            lines = r.iter_lines()
            between = _lines_before_first_data_after(lines, 'data: {"conversation_id"')  # the `turn` event
            assert any(line.startswith("event: done") for line in lines)
        assert between.count(": keep-alive") >= 3, between
        # Keep-alives until the first delta (its event and position lines come before its data).
        assert {line for line in between if not line.startswith("id: ")} <= {": keep-alive", "event: delta"}
        assert_settled(keepalive_server.database_url, cid)


def test_an_openai_stream_waiting_for_the_first_byte_sends_keep_alive_comments(keepalive_server, upstream):
    _, key = keepalive_server.new_key()
    with keepalive_server.client(key) as api:
        upstream.fail_next(Fault.slow_first_byte(1.2))
        chat = {"model": "fake-large", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with api.stream("POST", "/v1/chat/completions", json=chat) as r:
            lines = r.iter_lines()
            between = _lines_before_first_data_after(lines, "data: {")  # the role chunk
            rest = [json.loads(line[5:]) for line in lines if line.startswith("data: {")]
        assert between.count(": keep-alive") >= 3, between
        assert set(between) == {": keep-alive"}
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in rest if c["choices"]).endswith(
            "You said: hi"
        )


@pytest.mark.parametrize("provider", ["fake", "fakeollama"])
def test_what_the_upstream_says_about_its_reply_is_stored_only_as_a_plain_append_would_take_it(
    model_api, model_server, upstream, provider
):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.reply("fine", model="m\x00" + "o" * 100_000))
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi", "provider": provider})
    assert r.status_code == 201, r.text[:500]
    g = r.json()["assistant_message"]["generation"]
    assert g["model"] == "m\ufffd" + "o" * 198
    assert model_api.get(f"/v1/conversations/{cid}/export").status_code == 200
    assert model_api.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True
    assert_settled(model_server.database_url, cid)


def test_an_upstream_error_message_is_recorded_only_as_a_plain_append_would_take_it(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.status_code(400, message="bad\x00request"))
    body = problem(model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"}), 502, "upstream-rejected")
    assert "bad\x00request" in body["detail"]  # told as it came, but stored as text can hold it
    [failure] = turn_failures(model_server.database_url, cid)
    assert "bad\ufffdrequest" in failure["detail"]
    assert model_api.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True
    assert_settled(model_server.database_url, cid)
