"""Turns when things go wrong: the model fails, stalls, drops or is cut off by the client or a
shutdown; a turn under a reply still being generated; a server that died mid-reply. Nothing is
lost and nothing is left half-written: every user message ends with its reply or a `turn_failed`."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.fakeupstream import Fault
from tests.helpers import create, problem, say
from tests.postgres import fetch
from tests.servers import Server, fake_registry
from tests.turnkit import (
    assert_settled,
    sent_messages,
    sse,
    turn,
    turn_failures,
    wait_for,
)


def test_an_upstream_error_is_a_502_problem_the_user_message_stays_and_a_turn_failed_event_says_why(
    model_api, model_server, upstream
):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.status_code(500, message="the model exploded"))
    body = problem(
        model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"}), 502, "upstream-unavailable"
    )
    context = body["context"]
    assert context["provider"] == "fake" and "the model exploded" in body["detail"]
    assert context["stored"] is False
    head = model_api.get(f"/v1/conversations/{cid}").json()["head_id"]
    assert head == context["user_message_id"]  # kept, and the head is on it
    assert model_api.get(f"/v1/conversations/{cid}/messages/{head}").json()["content"] == "hi"
    never = context["assistant_message_id"]
    problem(model_api.get(f"/v1/conversations/{cid}/messages/{never}"), 404, "message-not-found")
    [failure] = turn_failures(model_server.database_url, cid)
    assert failure == {
        "reply_id": never,
        "user_message_id": head,
        "provider": "fake",
        "model": "fake-large",
        "error": "upstream_unavailable",
        "detail": body["detail"],
    }
    assert len(sent_messages(upstream)) == 1  # a 500 is not retried
    assert_settled(model_server.database_url, cid)


def test_an_upstream_that_does_not_answer_in_time_is_a_504_problem(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.slow_first_byte(2.0))
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi", "provider": "impatient"})
    body = problem(r, 504, "upstream-timeout")
    assert body["context"]["provider"] == "impatient"
    assert [f["error"] for f in turn_failures(model_server.database_url, cid)] == ["upstream_timeout"]
    assert_settled(model_server.database_url, cid)


def test_a_rate_limit_with_retry_after_is_waited_out_and_the_turn_succeeds(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.status_code(429, retry_after="1"))
    result = turn(model_api, cid, "patience")
    assert result["assistant_message"]["content"].endswith("You said: patience")
    assert len(sent_messages(upstream)) == 2
    assert turn_failures(model_server.database_url, cid) == []


def test_a_drop_mid_reply_is_never_retried_and_keeps_the_text_received_as_an_interrupted_reply(
    model_api, model_server, upstream
):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.drop(after=2))
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"})
    body = problem(r, 502, "upstream-protocol-error")
    assert body["context"]["stored"] is True and body["context"]["provider"] == "fake"
    reply = model_api.get(f"/v1/conversations/{cid}/messages/{body['context']['assistant_message_id']}").json()
    assert reply["content"] == "Hello from"
    g = reply["generation"]
    assert g["finish_reason"] == "interrupted" and g["interruption"]["kind"] == "upstream_protocol_error"
    assert model_api.get(f"/v1/conversations/{cid}").json()["head_id"] == reply["id"]
    assert len(sent_messages(upstream)) == 1  # once the first byte arrived, never again
    assert turn_failures(model_server.database_url, cid) == []
    assert_settled(model_server.database_url, cid)


def test_a_streamed_failure_ends_with_an_error_event_naming_the_provider_and_cause(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.status_code(503), Fault.status_code(503), Fault.status_code(503))
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "hi", "stream": True}) as r:
        events = list(sse(r))
    assert [name for name, _ in events] == ["turn", "error"]
    error = events[1][1]
    assert error["status"] == 502 and error["type"] == "urn:convtree:problem:upstream-unavailable"
    assert error["context"]["provider"] == "fake" and "503" in error["detail"]
    assert error["context"]["assistant_message_id"] == events[0][1]["assistant_message_id"]
    assert "message" not in error  # nothing was received, nothing stored
    assert len(sent_messages(upstream)) == 3  # retried before the first byte, then given up
    assert_settled(model_server.database_url, cid)


def test_a_client_leaving_mid_stream_stops_the_model_at_once_and_keeps_the_text_so_far(
    model_api, model_server, upstream
):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.endless())
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "go", "stream": True}) as r:
        events = sse(r)
        started = next(events)[1]
        relayed = [next(events)[1]["text"] for _ in range(3)]
    # Leaving closed the connection; the upstream request is cancelled promptly.
    assert upstream.wait_for_disconnect(1.0) is not None
    url = f"/v1/conversations/{cid}/messages/{started['assistant_message_id']}"
    reply = wait_for(lambda: model_api.get(url).json() if model_api.get(url).status_code == 200 else None)
    assert reply["content"].startswith("".join(relayed)) and set(reply["content"].split()) == {"tick"}
    g = reply["generation"]
    assert g["finish_reason"] == "interrupted" and g["interruption"]["kind"] == "client_disconnected"
    assert_settled(model_server.database_url, cid)


def test_a_client_leaving_a_plain_turn_also_stops_the_model(model_server, upstream):
    _, key = model_server.new_key()
    with model_server.client(key) as api:
        cid = create(api)["id"]
    upstream.fail_next(Fault.endless())
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(base_url=model_server.base_url, headers=headers, timeout=0.5) as impatient,
        pytest.raises(httpx.ReadTimeout),  # and the client hangs up
    ):
        impatient.post(f"/v1/conversations/{cid}/turns", json={"content": "go"})
    assert upstream.wait_for_disconnect(1.0) is not None
    with model_server.client(key) as api:
        wait_for(lambda: api.get(f"/v1/conversations/{cid}").json()["message_count"] == 2)
        reply = api.get(f"/v1/conversations/{cid}/context").json()["messages"][-1]
    assert reply["generation"]["interruption"]["kind"] == "client_disconnected"
    assert_settled(model_server.database_url, cid)


def test_a_turn_under_a_reply_still_being_generated_is_refused_with_409(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.endless())
    user_id = str(uuid.uuid4())
    body = {"content": "go", "stream": True, "id": user_id}
    with (
        httpx.Client(base_url=model_api.base_url, headers=model_api.headers, timeout=30) as streamer,
        streamer.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r,
    ):
        events = sse(r)  # kept: dropping it would close the response, i.e. leave
        started = next(events)[1]
        reply_id = started["assistant_message_id"]
        under_reply = {"content": "next", "parent_message_id": reply_id}
        refused = problem(
            model_api.post(f"/v1/conversations/{cid}/turns", json=under_reply), 409, "parent-still-generating"
        )
        assert refused["context"]["parent_message_id"] == reply_id
        # Under the head (the user message awaiting its reply) too.
        problem(
            model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "next"}), 409, "parent-still-generating"
        )
        # A plain append under the reply is refused the same way (never a placeholder parent).
        plain = {"role": "user", "content": "next", "parent_message_id": reply_id}
        problem(model_api.post(f"/v1/conversations/{cid}/messages", json=plain), 409, "parent-still-generating")
        # A retry of the turn itself is told its reply is on the way.
        retry = {"content": "go", "id": user_id}
        problem(model_api.post(f"/v1/conversations/{cid}/turns", json=retry), 409, "reply-in-progress")
        assert model_api.get(f"/v1/conversations/{cid}").json()["message_count"] == 1  # no placeholder
    wait_for(lambda: model_api.get(f"/v1/conversations/{cid}").json()["head_id"] == reply_id)
    assert turn(model_api, cid, "next", parent_message_id=reply_id)["user_message"]["parent_message_id"] == reply_id
    assert_settled(model_server.database_url, cid)


def test_shutting_down_mid_stream_ends_the_stream_cleanly_with_the_reply_stored_as_it_stood(databases, upstream):
    srv = Server(databases.migrated(), fake_registry(upstream), grace=2)
    srv.start()
    stopped = False
    try:
        _, key = srv.new_key()
        with srv.client(key) as api:
            cid = create(api)["id"]
            upstream.fail_next(Fault.endless())
            with api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "go", "stream": True}) as r:
                events = sse(r)
                started = next(events)[1]
                assert next(events)[0] == "delta"
                srv._server.should_exit = True  # what SIGTERM does
                rest = list(events)  # ends: the server finished the stream, it did not cut it
        srv.stop()
        stopped = True
        name, error = rest[-1]
        assert name == "error" and error["type"] == "urn:convtree:problem:shutting-down" and error["status"] == 503
        stored = error["message"]
        assert stored["id"] == started["assistant_message_id"]
        assert stored["generation"]["interruption"]["kind"] == "shutdown"
        text = "".join(data["text"] for n, data in rest if n == "delta")
        assert stored["content"].endswith(text) and set(stored["content"].split()) == {"tick"}
        assert upstream.disconnects  # the model was stopped too
        assert_settled(srv.database_url, cid)
    finally:
        if not stopped:
            srv.stop()


def test_a_reply_left_pending_by_a_server_that_died_is_closed_out_at_start_up(databases, upstream):
    url = databases.migrated()
    srv = Server(url, fake_registry(upstream))
    srv.start()
    try:
        _, key = srv.new_key()
        with srv.client(key) as api:
            cid = create(api)["id"]
            user = say(api, cid, "are you there?")
    finally:
        srv.stop()
    reply_id = uuid.uuid4()
    # What a server that died mid-reply leaves: the user message, and a pending reply whose lease ran out.
    fetch(
        url,
        "INSERT INTO pending_replies (family_id, reply_id, tenant, conversation_id, user_message_id, provider,"
        " model, actor, request_id, owner, expires_at)"
        " SELECT family_id, $1, tenant, conversation_id, $2, 'fake', 'fake-large', 'test', NULL, $3,"
        "        now() - interval '1 second'"
        "   FROM conversations WHERE conversation_id = $4",
        reply_id,
        uuid.UUID(user["id"]),
        uuid.uuid4(),
        uuid.UUID(cid),
    )
    srv = Server(url, fake_registry(upstream))
    srv.start()
    try:
        [failure] = wait_for(lambda: turn_failures(url, cid))  # closed out by the start-up sweep
        assert failure["reply_id"] == str(reply_id) and failure["user_message_id"] == user["id"]
        assert failure["error"] == "abandoned"
        assert_settled(url, cid)
        with srv.client(key) as api:
            # The conversation goes on: a turn under the user message is no longer refused.
            assert turn(api, cid, "hello?")["user_message"]["parent_message_id"] == user["id"]
    finally:
        srv.stop()


def test_a_client_leaving_before_the_first_token_leaves_a_turn_failed_not_a_pending_reply(
    model_api, model_server, upstream
):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.slow_first_byte(3.0))
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "go", "stream": True}) as r:
        events = sse(r)
        started = next(events)[1]
    [failure] = wait_for(lambda: turn_failures(model_server.database_url, cid))
    assert failure["reply_id"] == started["assistant_message_id"] and failure["error"] == "client_disconnected"
    assert_settled(model_server.database_url, cid)
